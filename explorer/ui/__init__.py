"""The only Streamlit-aware code: session state, shared widgets and chart helpers."""
