"""Signed webhooks (Standard Webhooks), delivered at least once, durable in Redis.

A task submitted with a ``webhook_url`` gets ``task.started``, ``task.succeeded``, ``task.failed`` and
``task.cancelled`` POSTed to it. The delivery is created by the same Lua script that changes the task's
status (jobs.scripts.UPDATE_UNLESS_TERMINAL), with the task as it was then: no change is ever without its
delivery, whoever made it (a worker, a cancel, the reconciler). Each API process runs a dispatcher
(``dispatcher.WebhookDispatcher``) that takes due deliveries from Redis (``deliveries``), POSTs them,
and retries failures with exponential back-off; nothing about a delivery lives only in a process.
"""
