"""WapCRM: WhatsApp and call-centre activity pulled into the CRM's tables (read only)."""
