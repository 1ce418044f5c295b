// placeholder: replaced by the UI
