from django.apps import AppConfig


class RuntimeSessionsConfig(AppConfig):
    name = "runtime_sessions"
    verbose_name = "Stateful workspaces"
