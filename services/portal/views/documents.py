"""Delivery materials: a file is fetched with the person's own token, so the documents service decides
who may read it (the order's enterprise and agency, officers, auditors) and everyone else gets 404."""
from flask import Blueprint, Response, stream_with_context

from services.portal.clients.documents import documents_api
from services.portal.signin import person_required

bp = Blueprint("documents", __name__, url_prefix="/documents")


@bp.route("/<document_id>")
@person_required("enterprise", "agency", "officer", "auditor")
def download(document_id):
    upstream = documents_api.download_document(document_id)
    headers = {k: upstream.headers[k] for k in ("Content-Type", "Content-Length", "Content-Disposition")
               if k in upstream.headers}
    return Response(stream_with_context(upstream.iter_content(64 * 1024)), headers=headers)
