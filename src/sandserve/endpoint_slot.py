"""Where the package leaves the services an ``Endpoint`` hands its work to (``endpoint.EndpointServices``).

A slot rather than an import: ``sandserve`` fills it when it is imported, without loading
``sandserve.endpoint`` (so `sandserve --help` stays small), and the endpoint module reads it when a method
needs it. The services call the layers above the endpoint, so neither side may import the other.
"""

services: object | None = None
