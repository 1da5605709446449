"""Euromsg Express (Related Digital) CRM/ERP gateway: client and module of assumptions (api.py)."""
