"""The operators' web console: layout, login, navigation and the static assets (htmx, Chart.js)."""
