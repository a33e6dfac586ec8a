"""The zoo osma ships: weights that fit the recipe, similar quality, digests of this build.

These read the repository's ``weights/zoo/`` directly (the test session hides the shipped
folder through ``OSMA_WEIGHTS_DIR``) and are skipped where it is not there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import osma_cli
from osma_cli.zoo.materialise import DIGESTS, plan_build, read_reference
from osma_cli.zoo.recipe import default_recipe
from osma_cli.zoo.store import list_records, load_generator, weights_path

REPO_ZOO = Path(osma_cli.__file__).resolve().parent.parent / "weights" / "zoo"
RECIPE = default_recipe()
NAMES = {spec.name for spec in RECIPE.generators}
RECORDS = list_records(REPO_ZOO)

shipped = pytest.mark.skipif(set(RECORDS) != NAMES, reason="the trained zoo is not in weights/zoo")


@shipped
def test_every_generator_is_trained_alike():
    steps = {r.training["steps"] for r in RECORDS.values()}
    assert steps == {RECIPE.training.steps}
    for spec in RECIPE.generators:
        record = RECORDS[spec.name]
        assert record.config == RECIPE.training.config(spec.family).to_dict()
        assert (record.family, record.dataset, record.seed) == (spec.family, spec.dataset, spec.seed)
        load_generator(weights_path(REPO_ZOO, spec.name))  # checks the tensors' hash
    psnr = [r.metrics["psnr_heldout"] for r in RECORDS.values()]
    assert max(psnr) - min(psnr) < 4  # similar quality: 27.9-31.0 dB as shipped


@shipped
def test_every_generator_reaches_the_quality_floor():
    assert min(r.metrics["psnr_heldout"] for r in RECORDS.values()) > 26


@shipped
def test_weights_are_a_few_megabytes():
    size = sum(p.stat().st_size for p in REPO_ZOO.glob("*.safetensors"))
    assert size < 8 * 2**20


@shipped
def test_shipped_digests_are_those_of_the_shipped_zoo():
    if not (REPO_ZOO / DIGESTS).is_file():
        pytest.skip("no reference digests yet")
    plan = plan_build(weights_dir=REPO_ZOO)
    reference = read_reference(REPO_ZOO)
    assert reference["fingerprint"] == plan.fingerprint
    assert set(reference["images"]) == {image.relpath for image in plan.images}
    assert len(reference["annotations"]) == 7 * len(RECIPE.splits)
