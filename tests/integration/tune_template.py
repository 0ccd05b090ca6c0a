"""A pipeline with the interface of the published `tune-large-model` template, compiled by the
retune tests with kfp (the real template lives on Artifact Registry, out of reach offline).

No `from __future__ import annotations` here: kfp reads the parameter types at definition time.
"""

from kfp import dsl


@dsl.component(base_image="python:3.11")
def tune(model_display_name: str, dataset_uri: str, train_steps: int) -> str:
    return model_display_name


@dsl.pipeline(name="tune-large-model")
def tune_large_model(
    project: str,
    location: str,
    large_model_reference: str,
    model_display_name: str,
    dataset_uri: str,
    evaluation_data_uri: str = "",
    train_steps: int = 300,
) -> None:
    tune(model_display_name=model_display_name, dataset_uri=dataset_uri, train_steps=train_steps)
