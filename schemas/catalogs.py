"""Which of the retained model catalogs a client believes (FORMAT.md section 11.1).

    catalogs = {("efficientnet-lite0", "w1"): msg1, ("efficientnet-lite0", "w2"): msg2}
    chosen = trusted_catalogs(catalogs, online={"w1"})
    # {"efficientnet-lite0": ("w1", msg1)}

Every worker publishes its catalogs under its own id (`<prefix>/catalog/<model>/<worker_id>`,
which a secure broker lets only that worker's login write). A client believes only the catalogs
of workers whose retained status says `online`: a revoked or departed worker's catalog is never
chosen, even while it is still retained. Where the online workers of one model disagree (two
builds), the fingerprint most of them publish wins, then the smallest worker id, so every
client reading the same retained state chooses the same catalog.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping

from schemas.messages import ModelCatalogMessage


def trusted_catalogs(
    catalogs: Mapping[tuple[str, str], ModelCatalogMessage], online: Collection[str]
) -> dict[str, tuple[str, ModelCatalogMessage]]:
    """model -> (worker id, catalog) chosen from `catalogs` ((model, worker id) -> catalog) of
    the workers in `online`; a model no online worker describes is absent. A catalog whose
    `model` is not its topic's model is ignored (a worker speaking for another model)."""
    by_model: dict[str, list[tuple[str, ModelCatalogMessage]]] = {}
    for (model, worker), catalog in catalogs.items():
        if worker in online and catalog.model == model:
            by_model.setdefault(model, []).append((worker, catalog))
    chosen: dict[str, tuple[str, ModelCatalogMessage]] = {}
    for model, offers in by_model.items():
        votes = Counter(catalog.fingerprint for _, catalog in offers)
        chosen[model] = min(offers, key=lambda o: (-votes[o[1].fingerprint], o[0]))
    return chosen
