from django.apps import AppConfig


class DeploysConfig(AppConfig):
    name = "apps.deploys"
    label = "deploys"
