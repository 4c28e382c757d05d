"""Routes. NormalizePathMiddleware has already removed a `/v1` prefix, duplicate slashes and a
trailing slash, so each API route is listed once."""

from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import path, re_path

from audit.metrics import metrics_view
from executor.views import ExecViewSet, RuntimeViewSet
from programmatic.views import ProgrammaticViewSet
from storage.views import FileViewSet, UploadViewSet

from .health import alive, health

handler400 = "sandbox_project.errors.json_400"
handler404 = "sandbox_project.errors.json_404"
handler500 = "sandbox_project.errors.json_500"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health", health),
    path("health/live", alive),
    path("metrics", metrics_view),
    # The admin's CSS and JS, found in the apps (no collectstatic, no second web server).
    re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
    path("exec", ExecViewSet.as_view({"post": "create"})),
    path("exec/programmatic", ProgrammaticViewSet.as_view({"post": "create"})),
    path("exec/programmatic/cancel", ProgrammaticViewSet.as_view({"post": "cancel"})),
    path("runtimes", RuntimeViewSet.as_view({"get": "list"})),
    path("upload", UploadViewSet.as_view({"post": "create"})),
    path("upload/batch", UploadViewSet.as_view({"post": "batch"})),
    path("download/<str:session_id>/<str:file_id>", FileViewSet.as_view({"get": "download"})),
    path("sessions/<str:session_id>/objects/<str:file_id>", FileViewSet.as_view({"get": "metadata", "delete": "destroy"})),
    path("files/<str:session_id>", FileViewSet.as_view({"get": "listing"})),
    path("files/<str:session_id>/<str:file_id>", FileViewSet.as_view({"delete": "destroy"})),
]
