<#
.SYNOPSIS
    Stops a VM: a guest shutdown (Stop-VM) for up to GracefulTimeoutSec, then Stop-VM -TurnOff.
    With Force it turns the VM off at once. Stopping a stopped VM succeeds and says so.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9-]{0,127}$')][string]$VmId,
    [ValidatePattern('^$|^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')][string]$NativeId,
    [bool]$Force,
    [ValidateRange(0, 3600)][int]$GracefulTimeoutSec,
    [bool]$Cluster
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
Import-Module -Name (Join-Path -Path $PSScriptRoot -ChildPath 'HcpCommon.psm1') -Force

$vm = Get-HcpVmOrThrow -VmId $VmId -NativeId $NativeId -Cluster $Cluster
if ($vm.State -eq 'Off') {
    return [ordered]@{ WasStopped = $true; Forced = $false }
}
if ($Force) {
    Stop-VM -VM $vm -TurnOff -Force
    return [ordered]@{ WasStopped = $false; Forced = $true }
}
$job = Stop-VM -VM $vm -Force -AsJob
$null = Wait-Job -Job $job -Timeout $GracefulTimeoutSec
$vm = Get-VM -Id $vm.Id -ComputerName $vm.ComputerName
if ($vm.State -eq 'Off') {
    Remove-Job -Job $job -Force
    return [ordered]@{ WasStopped = $false; Forced = $false }
}
Write-HcpProgress -Percent 50 -Message "guest did not shut down within $GracefulTimeoutSec s; turning the VM off"
Stop-Job -Job $job
Remove-Job -Job $job -Force
Stop-VM -VM $vm -TurnOff -Force
[ordered]@{ WasStopped = $false; Forced = $true }
