from django.db import connection
from django.http import JsonResponse


def healthz(request):
    """Liveness and readiness for Kubernetes: the process answers and the database does too."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any database failure makes the pod unready; say which
        return JsonResponse({"status": "error", "database": str(exc)[:200]}, status=503)
    return JsonResponse({"status": "ok"})
