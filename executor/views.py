"""POST /exec and GET /runtimes."""

from rest_framework import viewsets
from rest_framework.response import Response

from . import pipeline, runtimes


class ExecViewSet(viewsets.ViewSet):
    def create(self, request):
        return Response(pipeline.execute(request.data, request.user, request))


class RuntimeViewSet(viewsets.ViewSet):
    def list(self, request):
        return Response(runtimes.describe())
