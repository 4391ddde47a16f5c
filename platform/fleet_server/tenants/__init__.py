"""Business units (tenants) and the API keys they use; every API queryset is scoped by tenant."""
