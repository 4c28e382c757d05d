"""JSON log lines (python-json-logger) with the seed's level names."""

import logging

VERBOSE = 5
logging.addLevelName(VERBOSE, "VERBOSE")

LEVELS = {"error": "ERROR", "warn": "WARNING", "info": "INFO", "debug": "DEBUG", "verbose": "VERBOSE"}


def build_logging(level_name: str) -> dict:
    level = LEVELS[level_name]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
                "timestamp": False,
            }
        },
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            # Django's request logger repeats what our JSON errors and audit lines already say.
            "django.request": {"level": "ERROR"},
            "django.server": {"level": "WARNING"},
            "docker": {"level": "WARNING"},
            "urllib3": {"level": "WARNING"},
        },
    }
