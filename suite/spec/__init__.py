"""The study specification: a study file becomes frozen, validated run specs (imports no torch).

- `config`: the typed run configuration (pydantic), its legacy values and run-key rules.
- `study`: read a study file, validate it, expand variants x grid x datasets x seeds into `RunSpec`s.
- `checks`: what a file must be beyond its types (bounds, sizes, splits, searches); `grid`: the merge rule and grid
  axes; `derived`: smoke and tuned runs and the searches that tune them; `messages`: one-line errors.
- `claims`: the claim grammar of a study file.
- `schema`: the generated study-file reference (`suite schema`).
"""
