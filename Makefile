# Two commands on a fresh machine: `make run` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PORT ?= 8000
PY := .venv/bin/python
ENV := source var/env

.PHONY: help install stack run demo token admin test test-unit stop status clean deadletters migrate-queues bench

help:
	@echo "make run     install what is missing, start RabbitMQ, FerretDB, Keycloak and every service, load demo data"
	@echo "make test    the same set-up, then the whole test suite"
	@echo "make token ROLE=officer SUBJECT=o1   a bearer token from the realm for local calls (SUBJECT: the"
	@echo "             organisation for enterprise/agency, the username for staff; none: the demo user)"
	@echo "make status | make stop | make clean"

install:
	@bash scripts/install.sh

stack: install
	@bash scripts/stack.sh start

run: stack
	@bash scripts/services.sh start
	@$(ENV) && $(PY) -m scripts.demo "http://127.0.0.1:$(PORT)"

token:
	@test -n "$(ROLE)" || { echo "usage: make token ROLE=<enterprise|agency|officer|auditor|ops> [SUBJECT=<id>]" >&2; exit 2; }
	@test -f var/env || { echo "run 'make run' (or 'make stack') first: it starts Keycloak" >&2; exit 2; }
	@$(ENV) && $(PY) -W ignore scripts/keycloak.py token "$(ROLE)" $(SUBJECT)

# The first officer (auditor, ops) of a realm: `make admin USER=li.wei ROLE=officer` (docs/security.md).
admin:
	@test "$(origin USER)" = "command line" -a -n "$(ROLE)" || { echo "usage: make admin USER=<username> ROLE=<officer|auditor|ops>" >&2; exit 2; }
	@$(ENV) && $(PY) -W ignore scripts/keycloak.py admin "$(USER)" "$(ROLE)"

test: stack
	@bash scripts/stack.sh fresh-test-vhost
	@$(ENV) && PYTHONWARNINGS=ignore::DeprecationWarning $(PY) -m pytest $(PYTEST_ARGS)
	@# The portal's browser tests run in a process without eventlet (tests/conftest.py says why).
	@if [ -z "$(PYTEST_ARGS)" ]; then $(ENV) && $(PY) -m pytest tests/portal; fi

test-unit: install
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Dead letters of every consumer: `make deadletters`, `make deadletters ARGS="list enterprises.on_agency_standing"`,
# `make deadletters ARGS="replay enterprises.on_agency_standing --id <event_id>"` (or --all).
deadletters:
	@$(ENV) && $(PY) -W ignore -m ipvkit.deadletters $(or $(ARGS),list)

# An installation that started on classic queues moves to quorum queues, every service stopped first
# (docs/operations.md, "Moving to quorum queues"): `make migrate-queues ARGS=plan`, then `make migrate-queues`.
migrate-queues:
	@$(ENV) && $(PY) -W ignore -m ipvkit.migrate_queues $(or $(ARGS),run)

# Benchmarks, not part of `make test`; figures and how to read them: bench/README.md.
# BENCH picks one: run (the whole chain), vouchers_orders, audit_ledger, providers_load, documents_upload,
# store_filters, portal.
BENCH ?= run
bench: stack
	@$(ENV) && $(PY) -W ignore -m bench.$(BENCH) $(BENCH_ARGS)

status:
	@bash scripts/stack.sh status; test -f var/env && bash scripts/services.sh status || true

stop:
	@test -f var/env && bash scripts/services.sh stop || true
	@bash scripts/stack.sh stop

clean: stop
	rm -rf var .venv
