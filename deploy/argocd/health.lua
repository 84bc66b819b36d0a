-- Argo CD health check for kubiya.ai/Environment and kubiya.ai/WorkerQueue (their conditions
-- follow one contract). Install it under resource.customizations.health.kubiya.ai_Environment
-- and resource.customizations.health.kubiya.ai_WorkerQueue in argocd-cm.
--   Healthy      Ready=True at the current generation
--   Degraded     Stalled=True: needs a human (rejected spec, bad API key, name conflict, remote error)
--   Suspended    paused by annotation, or disabled in the control plane (spec.state: Inactive)
--   Progressing  everything else: not yet observed, creating, provisioning, retrying, deleting
local hs = {}

local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then
      return c
    end
  end
  return nil
end

-- Not yet observed: no status, or only the CRD's default (observedGeneration 0).
if obj.status == nil or (obj.status.observedGeneration == 0 and obj.status.conditions == nil) then
  hs.status = "Progressing"
  hs.message = "Waiting for kubiya-operator to pick it up"
  return hs
end

local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "False" and reconciling.reason == "Paused" then
  hs.status = "Suspended"
  hs.message = reconciling.message
  return hs
end

if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for kubiya-operator to apply the latest spec"
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end

if obj.status.phase == "Inactive" then
  hs.status = "Suspended"
  hs.message = obj.status.message
  return hs
end

hs.status = "Progressing"
hs.message = obj.status.message or "Reconciling"
return hs
