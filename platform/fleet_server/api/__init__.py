"""Shared REST API pieces (NetBox style): authentication, permissions, pagination, base viewsets, the router."""
