-- Active DHCP leases at the site, as its agent last reported; NULL when the agent
-- serves no DHCP.
ALTER TABLE sites ADD COLUMN dhcp_leases INTEGER;
