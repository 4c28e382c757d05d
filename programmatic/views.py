"""POST /exec/programmatic (a run, or its continuation) and POST /exec/programmatic/cancel."""

from rest_framework import viewsets
from rest_framework.response import Response

from sandbox_project.parsers import StrictJSONParser

from . import service


class ProgrammaticViewSet(viewsets.ViewSet):
    parser_classes = [StrictJSONParser]

    def create(self, request):
        return Response(service.handle(request.data, request.user, request))

    def cancel(self, request):
        body, status = service.cancel(request.data, request.user)
        return Response(body, status=status)
