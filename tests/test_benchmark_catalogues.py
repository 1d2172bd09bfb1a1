"""The benchmarks' shared command line: which chains they measure."""
import argparse

import pytest

from conftest import benchmark_module

catalogues = benchmark_module("catalogues")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    catalogues.add_catalogue_arguments(parser, "a_benchmark", "notebooks 01-06")
    return parser


def test_without_catalogues_a_benchmark_measures_the_repositorys_chain():
    (catalogue,) = parser().parse_args([]).catalogues
    assert catalogue == catalogues.ChainRun("embedded", None)
    assert catalogue.paths.root == catalogues.ChainRun.parse("embedded").paths.root


def test_catalogues_are_named_folders_and_only_embedded_may_omit_its_folder(tmp_path):
    embedded, other = parser().parse_args(["--catalogues", "embedded", f"tt={tmp_path}"]).catalogues
    assert (embedded.name, other.name, other.output_dir) == ("embedded", "tt", str(tmp_path))
    with pytest.raises(ValueError, match="NAME=DIR"):
        catalogues.ChainRun.parse("tidytuesday")
