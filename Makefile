# The course's three commands, for people with make. Each one calls course.py
# (standard library only; `python course.py lab|test|chat` without make), which
# makes .venv on first use and reinstalls only when pyproject.toml changed.
PYTHON ?= python3
HOST   ?= 127.0.0.1
PORT   ?= 8000
ARGS   ?=

.PHONY: lab chat test

lab:
	$(PYTHON) course.py lab $(ARGS)

chat:
	$(PYTHON) course.py chat --host $(HOST) --port $(PORT) $(ARGS)

test:
	$(PYTHON) course.py test $(ARGS)
