from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("runs/", views.start, name="start"),
    path("runs/<str:run_id>/", views.show, name="show"),
    path("nen/", include("nen_celery.web.django")),  # POST /nen/webhooks/nen (CSRF-exempt), GET /nen/healthz
]
