from django.db import models


class Order(models.Model):
    name = models.CharField(max_length=200)
    date_of_birth = models.CharField(max_length=10)
    email = models.EmailField()
    run_id = models.CharField(max_length=64, blank=True)  # the Nen run checking this order
    status = models.CharField(max_length=20, default="checking")  # then Nen's outcome
    callbacks = models.PositiveIntegerField(default=0)  # how often a run callback reached this order
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Order {self.pk} ({self.status})"
