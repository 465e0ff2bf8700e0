# Convenience targets; each calls the same scripts as the README's two commands.
.PHONY: setup book test grade stubs clean

setup:
	bash scripts/setup.sh

book:
	bash scripts/book.sh

test:
	bash scripts/test.sh

grade: setup
	.venv/bin/python -m sparse_core grade

stubs: setup
	.venv/bin/python scripts/make_stubs.py

clean:
	rm -rf _build
