from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="Order",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200)),
                ("date_of_birth", models.CharField(max_length=10)),
                ("email", models.EmailField(max_length=254)),
                ("run_id", models.CharField(blank=True, max_length=64)),
                ("status", models.CharField(default="checking", max_length=20)),
                ("callbacks", models.PositiveIntegerField(default=0)),
                ("created", models.DateTimeField(auto_now_add=True)),
            ],
        ),
    ]
