-- ArgoCD health check for every bqsteward kind (IngestedTable, DatasetAccess, ConsumerProject,
-- GroupMembership): maps bqsteward's status conditions to ArgoCD health.
--   Degraded:    Degraded=True (e.g. quarantined files), or Ready=False for a reason that needs a
--                person (InvalidSpec, ApplyFailed, CloudError, ...)
--   Progressing: no status yet, status older than the spec, or Loading=True / FilesPending
--   Suspended:   Ready=False with reason PlanOnly (annotation bqsteward.dev/mode: plan): the
--                message is the plan (what apply would change)
--   Healthy:     Ready=True
hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "waiting for bqsteward to reconcile"
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "bqsteward has not seen the latest spec yet"
  return hs
end
local ready, degraded, loading = nil, nil, nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then ready = c end
  if c.type == "Degraded" then degraded = c end
  if c.type == "Loading" then loading = c end
end
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.message
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
if ready ~= nil and ready.status == "False" and ready.reason == "PlanOnly" then
  local planned = nil
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Planned" then planned = c end
  end
  hs.status = "Suspended"
  hs.message = (planned ~= nil and planned.message) or ready.message
  return hs
end
if (loading ~= nil and loading.status == "True") or (ready ~= nil and ready.reason == "FilesPending") then
  hs.status = "Progressing"
  hs.message = (loading ~= nil and loading.message) or ready.message
  return hs
end
if ready ~= nil then
  hs.status = "Degraded"
  hs.message = ready.reason .. ": " .. (ready.message or "")
  return hs
end
hs.status = "Progressing"
hs.message = "waiting for bqsteward to reconcile"
return hs
