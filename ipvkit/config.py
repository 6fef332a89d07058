"""Configuration: a service's config.yaml whose values are `${VAR:default}`, read the way
`nameko run --config` reads it, so tests and production resolve the same settings."""
import yaml
from nameko.cli.main import setup_yaml_parser

setup_yaml_parser()


def load(path, **overrides):
    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    config.update(overrides)
    return config


def required(config, key):
    value = config.get(key)
    if value in (None, ""):
        raise RuntimeError(f"configuration {key} is not set (see the service's config.yaml)")
    return value
