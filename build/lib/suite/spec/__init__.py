"""The study specification: a study file becomes frozen, validated run specs (imports no torch).

- `config`: the typed run configuration (pydantic), its legacy values and run-key rules.
- `study`: read a study file, validate it, expand variants x grid x datasets x seeds into `RunSpec`s.
- `claims`: the claim grammar of a study file.
- `schema`: the generated study-file reference (`suite schema`).
"""
