"""Trust: who is calling (authentication), what they may do (roles and policy), and a record of it
(audit). Every head hands its credentials to one `Gate`; nothing else decides."""
