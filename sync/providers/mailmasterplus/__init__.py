"""MailMasterPlus: REST with HTTP basic auth, records per list, bare-number answers (see api.py)."""
