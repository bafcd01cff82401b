"""The Textual front end. `app.make_app` builds it; `state` and `session` hold no textual."""
