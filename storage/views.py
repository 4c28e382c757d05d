"""Upload, download, metadata, listing and deletion routes (thin: each calls one function)."""

from django.http import FileResponse
from rest_framework import viewsets
from rest_framework.response import Response

from audit.events import record
from sandbox_project.errors import not_found

from . import service, store


class UploadViewSet(viewsets.ViewSet):
    def create(self, request):
        body, status = service.upload(request, request.user, batch=False)
        return Response(body, status=status)

    def batch(self, request):
        body, status = service.upload(request, request.user, batch=True)
        return Response(body, status=status)


class FileViewSet(viewsets.ViewSet):
    def download(self, request, session_id, file_id):
        stored = service.find_for(request.user, session_id, file_id)
        try:
            handle = store.open_file(stored)  # a stream from the store, read in blocks
        except FileNotFoundError:  # deleted or expired between the lookup and now
            raise not_found() from None
        record("download", request, user_id=request.user.user_id or stored.session.user_id or None,
               session_id=stored.session_id,
               file={"fileId": stored.id, "filename": stored.name, "size": stored.size, "mimeType": stored.content_type})
        name = stored.name.rsplit("/", 1)[-1]
        response = FileResponse(handle, content_type=stored.content_type, as_attachment=True, filename=name)
        response["Content-Length"] = str(stored.size)  # the same header from either store
        return response

    def metadata(self, request, session_id, file_id):
        return Response(service.describe(service.find_for(request.user, session_id, file_id)))

    def listing(self, request, session_id):
        items = service.list_session(request.user, session_id, request.query_params.get("detail", "simple"))
        record("files_list", request, user_id=request.user.user_id, session_id=session_id, details={"count": len(items)})
        return Response(items)

    def destroy(self, request, session_id, file_id):
        return Response(service.delete(request.user, session_id, file_id, request))
