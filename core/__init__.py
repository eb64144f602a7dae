"""Channel Chat core: data, verbs and the AI worker. Never imports streamlit."""
