#!/usr/bin/env bash
# Writes the fleet example's routes (docs/fleet.md): `site.localhost` in etcd, behind a rate
# limit shared through Redis; `api.localhost` in Redis. Both go to the HTTP server on
# 127.0.0.1:9000. Run from anywhere, with etcd and Redis on their default ports.
set -euo pipefail

etcd() { ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:2379 put "$1" "$2" >/dev/null; }
redis() { redis-cli -u redis://127.0.0.1:6379 SET "$1" "$2" >/dev/null; }

# In etcd: the site, limited to 10 requests at once then one a second per client, counted
# across every instance in the Redis named here.
etcd traefik/http/services/site/loadBalancer/servers/0/url http://127.0.0.1:9000
etcd traefik/http/middlewares/limit/rateLimit/average 60
etcd traefik/http/middlewares/limit/rateLimit/period 1m
etcd traefik/http/middlewares/limit/rateLimit/burst 10
etcd traefik/http/middlewares/limit/rateLimit/redis/endpoints/0 127.0.0.1:6379
etcd traefik/http/routers/site/middlewares/0 limit
etcd traefik/http/routers/site/service site
etcd traefik/http/routers/site/rule 'Host(`site.localhost`)'

# In Redis: the API.
redis traefik/http/services/api/loadBalancer/servers/0/url http://127.0.0.1:9000
redis traefik/http/routers/api/service api
redis traefik/http/routers/api/rule 'Host(`api.localhost`)'
