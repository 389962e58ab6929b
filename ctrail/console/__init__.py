"""The web console: triage, search and timelines in the browser, for local users with roles
and namespace/cluster scopes (issue 16).

    config.py   ConsoleConfig (the `console:` section): where to listen, TLS, session and
                login limits
    users.py    the console database (DATA_DIR/console.db): users, API tokens, sessions,
                failed logins, and the append-only triage records of alerts
    auth.py     passwords (argon2), sessions and tokens, CSRF, the login rate limit, and the
                gate every request passes (nothing answers without a session or token)
    oidc.py     optional single sign-on (OpenID Connect, code flow with PKCE)
    scopes.py   a user's scope as a query tree ANDed into every query on the server
    data.py     what pages and API read: the same store queries as the CLI, scoped
    graph.py    the entity graph around a timeline's subject, as a picture
    operations.py  reports and evidence (unscoped users; runs by admins)
    api.py      the JSON API under /api/ (OpenAPI at /api/openapi.json)
    pages.py    server-rendered pages (jinja2) with a little plain JavaScript
    app.py      the FastAPI application and the uvicorn server
"""
