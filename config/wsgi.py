import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from messaging.checks import refuse_open_sandbox  # noqa: E402  (needs the apps loaded)

refuse_open_sandbox()  # no web process with an open sandbox in production
