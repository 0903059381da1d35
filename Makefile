# The two commands an operator needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
STAMP := $(VENV)/.installed
# Poetry reads the same package index as this machine's pip (internal mirrors included).
INDEX = $(shell $(BIN)/python -c "from sandbox.hostinfo import package_index_url; print(package_index_url())")

.PHONY: demo demo-fleet test setup host-packages example-app-test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(STAMP)

# Podman, debootstrap, git, ssh: installed when missing (the same script CI runs).
host-packages:
	bash sandbox/host-packages.sh

demo: host-packages setup
	$(BIN)/python -m sandbox up --servers 1
	$(BIN)/pyinfra -y inventory.py deploy.py
	$(BIN)/python -m sandbox ssh sandbox-1 -- sudo bizsite-manage load_demo_data
	$(BIN)/python -m sandbox status
	@echo "Open the http URL above (the site answers to Host localhost)."

# A fleet: a load balancer, a database server and two app servers, in a state dir of their own
# (`SANDBOX_STATE=.sandbox-fleet .venv/bin/python -m sandbox down` removes it). The last line is
# the load balancer's HTTPS address.
FLEET := SANDBOX_STATE=$(abspath .sandbox-fleet)
demo-fleet: host-packages setup
	$(FLEET) $(BIN)/python -m sandbox up --roles lb,db,app,app
	$(FLEET) DJDEPLOY_SETTINGS=sandbox/fleet-settings.json $(BIN)/pyinfra -y inventory.py deploy.py
	$(FLEET) $(BIN)/python -m sandbox ssh app-1 -- sudo bizsite-manage load_demo_data
	$(FLEET) $(BIN)/python -m sandbox status
	@echo "Open the https URL below (self-signed certificate; the site answers to Host localhost):"
	@$(FLEET) $(BIN)/python -m sandbox url lb-1 --https

example-app-test: setup
	cd example_app && POETRY_PYPI_MIRROR_URL=$(INDEX) POETRY_VIRTUALENVS_IN_PROJECT=true \
		$(BIN)/poetry install --no-interaction --no-root --quiet
	cd example_app && .venv/bin/python manage.py test --verbosity 1

# pytest exits 5 when it collected no test: make treats that as a failure too.
test: host-packages example-app-test
	$(BIN)/python -m pytest
