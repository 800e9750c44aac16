"""A Django project that starts Nen runs from a view and shows their status (a test fixture)."""
