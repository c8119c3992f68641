"""The live item catalogue's API, shared by REST (`/v1/items...`) and gRPC (UpsertItems, GetItem, DeleteItems).

A write is checked whole before anything is stored (ids, counts, attribute names and values; the types against the
catalogue's schema are checked again, atomically, by the write script), then stored in one Redis script call:
when it returns, every replica's next request sees it (serving.catalog_live).

    items = ItemCatalog(clients.catalog, versions)
    written = await items.upsert([("a", {"available": False})], merge=True)   # -> Written(count=1, seq=...)
    attributes, known = await items.get("a")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway import checks
from gateway.model_versions import ModelVersions
from recmesh.catalog.table import Catalog, CatalogError, Value, type_of
from serving import limits
from serving.catalog_live import LiveCatalog
from serving.errors import InvalidArgument, NotFound


@dataclass(frozen=True)
class Written:
    count: int
    catalog_seq: int


@dataclass(frozen=True)
class ItemCatalog:
    live: LiveCatalog
    versions: ModelVersions

    async def upsert(self, items: Sequence[tuple[str, Mapping[str, object]]], merge: bool = False) -> Written:
        """Replace (or, with merge, change) the items' attributes; InvalidArgument naming the first bad item."""
        _check_ids("items", [item_id for item_id, _ in items], "item_id")
        schema_holder = Catalog()  # names and values checked alone; types against the live schema below
        live_schema = self.live.catalog.schema
        for i, (item_id, attributes) in enumerate(items):
            where = f"items[{i}].attributes"
            if not merge and any(value is None for value in attributes.values()):
                raise InvalidArgument(f"{where}: null removes an attribute only with merge (PATCH)", field=where)
            try:
                schema_holder.check(item_id, attributes)
            except CatalogError as e:
                raise InvalidArgument(f"{where}: {e}", field=where) from e
            for name, value in attributes.items():
                expected = live_schema.get(name)
                if value is not None and expected is not None and type_of(value) != expected:
                    raise InvalidArgument(
                        f"{where}: item {item_id!r}, attribute {name!r}: expected a {expected}, got {value!r}; "
                        "nothing was written",
                        field=where,
                    )
        try:
            seq = await self.live.write(list(items), "merge" if merge else "replace")
        except CatalogError as e:  # a type the script's schema refused (another writer got there first)
            raise InvalidArgument(f"{e}; nothing was written", field="items") from e
        return Written(len(items), seq)

    async def get(self, item_id: str) -> tuple[dict[str, Value], bool]:
        """The item's attributes (as of now: the catalogue is refreshed first) and whether the current model has
        a vector for it; NotFound when the catalogue has no entry for it."""
        checks.identifier("item_id", item_id)
        catalog = await self.live.refresh()
        attributes = catalog.get(item_id)
        if attributes is None:
            raise NotFound(f"item {item_id!r} is not in the catalogue")
        info = self.versions.get("")
        return attributes, item_id in (await info.items()).known

    async def delete(self, item_ids: Sequence[str]) -> Written:
        """Remove the items' entries (ids without one are ignored); count = those that had one."""
        _check_ids("item_ids", item_ids, None)
        catalog = await self.live.refresh()
        had = sum(1 for item_id in item_ids if item_id in catalog)
        seq = await self.live.delete(list(item_ids))
        return Written(had, seq)


def _check_ids(field: str, item_ids: Sequence[str], member: str | None) -> None:
    if not item_ids:
        raise InvalidArgument(f"{field} must not be empty", field=field)
    checks.count(field, item_ids, limits.MAX_CATALOG_WRITE)
    seen: set[str] = set()
    for i, item_id in enumerate(item_ids):
        checks.identifier(f"{field}[{i}].{member}" if member else f"{field}[{i}]", item_id)
        if item_id in seen:
            raise InvalidArgument(f"{field}: item {item_id!r} appears twice", field=field)
        seen.add(item_id)
