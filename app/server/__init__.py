"""How gunicorn serves the app: the guarded asgi worker (head deadline, connection cap)."""
