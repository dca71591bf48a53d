"""The Sync page: an Airflow 3 UI plugin (plugin.py) serving a small FastAPI app (app.py)
that shows what the sync holds and lets an operator release, retry, approve or reject."""
