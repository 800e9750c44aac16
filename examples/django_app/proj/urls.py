from django.urls import include, path
from shop import views

urlpatterns = [
    path("", views.index, name="index"),
    path("orders/", views.create_order, name="create_order"),
    path("orders/<int:pk>/", views.order_detail, name="order_detail"),
    path("nen/", include("nen_celery.web.django")),  # POST nen/webhooks/nen (CSRF-exempt), GET nen/healthz
]
