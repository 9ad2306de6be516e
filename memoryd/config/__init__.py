"""Project configuration: schema, loading and validation, key templates, resolution.

Entry points: ``loader.load_project`` (startup and ``memoryd validate``) and the
``resolve`` module (per request). See docs/configuration.md.
"""
