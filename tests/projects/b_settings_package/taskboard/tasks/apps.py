from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "taskboard.tasks"
    verbose_name = "Tasks"
