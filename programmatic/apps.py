from django.apps import AppConfig


class ProgrammaticConfig(AppConfig):
    name = "programmatic"
    verbose_name = "Programmatic tool calling"
