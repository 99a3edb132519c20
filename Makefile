# lrp-teach: two commands, and a third for learners.
#   make book   build the HTML book into _build/html (sets up .venv on first use)
#   make test   lint, unit tests, every notebook, the book build and the rendered-page check
#   make lab    open the chapters (book/) and the student copies (labs/) in JupyterLab
#   make labs   write the student copies into labs/ (existing copies are kept) and test them
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1
export PYDEVD_DISABLE_FILE_VALIDATION = 1

.PHONY: book test lint unit notebooks labs student-copies lab rendered venv clean

venv: $(STAMP)

# lxt==2.1 (AttnLRP's reference code) is installed without dependencies for the transformer
# cross-check: its package imports transformers, but the tests read lxt/efficient/rules.py only
$(STAMP): requirements.txt pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip install -q --no-deps lxt==2.1
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	@touch $(STAMP)

book: venv
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book is at file://$(CURDIR)/_build/html/index.html"

lint: venv
	$(BIN)/ruff check .

unit: venv
	MPLBACKEND=Agg $(BIN)/pytest -q -m "not rendered and not student" tests

notebooks: venv
	$(BIN)/pytest -q --nbval-lax --nbval-current-env book/

student-copies: venv
	$(BIN)/python -m lrp_teach.labs student book/[0-9]*.ipynb -o labs --keep-existing

labs: student-copies
	$(BIN)/pytest -q -m student tests

lab: venv
	@echo "JupyterLab: the chapters are in book/, the student copies in labs/ (make labs)."
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)"

rendered: venv
	LRP_TEACH_REQUIRE_BOOK=1 $(BIN)/pytest -q -m rendered tests

test: lint unit notebooks labs book rendered
	@echo "make test: all checks passed"

clean:
	rm -rf _build .pytest_cache .ruff_cache
