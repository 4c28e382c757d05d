"""POST /exec and GET /runtimes."""

from rest_framework import viewsets
from rest_framework.response import Response

from sandbox_project.parsers import StrictJSONParser

from . import pipeline, runtimes


class ExecViewSet(viewsets.ViewSet):
    # JSON only: a web page can send a form or text/plain body without a CORS preflight.
    parser_classes = [StrictJSONParser]

    def create(self, request):
        return Response(pipeline.execute(request.data, request.user, request))


class RuntimeViewSet(viewsets.ViewSet):
    def list(self, request):
        return Response(runtimes.describe())
