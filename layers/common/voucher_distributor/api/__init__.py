"""The HTTP API's application code, apart from its handler (``functions/api/app.py``).

- :mod:`.request`: the parts of a request the routes read (:class:`~.request.ApiRequest`).
- :mod:`.problems`: answers, and errors as ``application/problem+json`` (RFC 9457).
- :mod:`.bodies`: decoding a posted body (JSON or CSV) into a distribution, or a decision's note.
- :mod:`.routes`: each route's work: authenticate, check the scope, one use case, the answer.

Nothing here imports Powertools' event handler: the handler keeps the resolver and its
decorators, and hands each route an :class:`~.routes.ApiCall`.
"""
