"""recmesh-client: the gateway's gRPC API from Python (the generated stubs are ``recmesh.v1``).

from recmesh_client import RecmeshClient

with RecmeshClient("localhost:50050") as client:
    print(client.recommend(["item-1"], k=5).items)
"""

from recmesh_client.client import RecmeshClient, event
from recmesh_client.errors import RecmeshError

__all__ = ["RecmeshClient", "RecmeshError", "event"]
