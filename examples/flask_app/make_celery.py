"""``celery -A make_celery worker`` / ``beat``: the Flask app's Celery app (Flask's guide)."""

from flask_example import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
