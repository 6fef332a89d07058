"""gunicorn settings for the portal (scripts/services.sh and the Kubernetes Deployment pass --bind)."""
# Threads, not processes: pages mostly wait on the API, and sessions live in the portal's database, so
# any worker or pod can answer any request.
worker_class = "gthread"
workers = 2
threads = 8
timeout = 60
graceful_timeout = 20
accesslog = "-"
access_log_format = '{"remote":"%(h)s","request":"%(r)s","status":%(s)s,"ms":%(M)s}'
