// Occupancy chart on the park page: polls the JSON series and redraws as a step line without a page reload.
(function () {
  const canvas = document.getElementById("occupancy-chart");
  if (!canvas || typeof Chart === "undefined") return;
  const chart = new Chart(canvas, {
    type: "line",
    data: { labels: [], datasets: [{ label: "Occupied spaces", data: [], borderColor: "#1f6feb", pointRadius: 0, stepped: true }] },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: { y: { min: 0, ticks: { precision: 0 } }, x: { ticks: { maxTicksLimit: 8 } } },
    },
  });
  async function refresh() {
    try {
      const response = await fetch(canvas.dataset.url, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const series = await response.json();
      chart.data.labels = series.t.map((t) => new Date(t).toLocaleTimeString());
      chart.data.datasets[0].data = series.occupied;
      chart.update();
      canvas.dataset.points = String(series.t.length);
    } catch (err) {
      console.warn("occupancy refresh failed", err);
    }
  }
  refresh();
  setInterval(refresh, 5000);
})();
