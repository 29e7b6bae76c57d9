<#
.SYNOPSIS
    Changes a VM's processor count, startup memory and first virtual disk's size. 0 keeps a value.
.DESCRIPTION
    Every check comes before any change, so a refused resize changes nothing.
    - Processors (Set-VMProcessor -Count) and memory (Set-VMMemory -StartupBytes) change only
      while the VM is Off. Hyper-V's runtime memory resize of Windows Server 2016 depends on the
      guest (Windows Server 2016 / Windows 10 and later, Linux with memory hot-add), which HCP
      cannot know, and a VM with dynamic memory never takes a new startup memory while it runs.
      With dynamic memory, the minimum and maximum widen to keep the new startup memory inside.
    - The first hard disk drive's virtual disk (controller order: the boot disk HCP attached)
      grows with Resize-VHD: live when it is on the SCSI chain (generation 2 VMs), only while the
      VM is Off when it is on the IDE chain (generation 1). A disk never shrinks, and a VM with
      checkpoints keeps its disk size (its disk is a chain of differencing disks).
    Sizes equal to the current ones are no change. The reply lists what changed.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9-]{0,127}$')][string]$VmId,
    [ValidatePattern('^$|^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')][string]$NativeId,
    [ValidateRange(0, 240)][int]$Vcpus,
    [ValidateRange(0, 12582912)][int64]$MemoryMiB,
    [ValidateRange(0, 65536)][int64]$DiskGiB,
    [bool]$Cluster
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
Import-Module -Name (Join-Path -Path $PSScriptRoot -ChildPath 'HcpCommon.psm1') -Force

$vm = Get-HcpVmOrThrow -VmId $VmId -NativeId $NativeId -Cluster $Cluster
$off = ($vm.State -eq 'Off')
$changed = @()

$setCpu = ($Vcpus -gt 0 -and $Vcpus -ne $vm.ProcessorCount)
if ($setCpu) {
    $max = 240
    if ($vm.Generation -eq 1) { $max = 64 }
    if ($Vcpus -gt $max) {
        throw (New-HcpError -Category InvalidArgument -ErrorId 'ProcessorCountOutOfRange' -Message "Generation $($vm.Generation) virtual machines have 1-$max virtual processors; $Vcpus were asked for.")
    }
    if (-not $off) {
        throw (New-HcpError -Category InvalidOperation -ErrorId 'ProcessorCountNeedsOff' -Message "Virtual machine '$($vm.Name)' is $($vm.State); Hyper-V changes its processor count only while it is off.")
    }
}

$memory = Get-VMMemory -VM $vm
$bytes = [int64]$MemoryMiB * 1048576
$setMemory = ($MemoryMiB -gt 0 -and $bytes -ne $memory.Startup)
if ($setMemory) {
    if ($MemoryMiB % 2 -ne 0) {
        throw (New-HcpError -Category InvalidArgument -ErrorId 'MemoryNotAligned' -Message "Startup memory must be a multiple of 2 MB; $MemoryMiB MB was asked for.")
    }
    $maxMiB = 12582912
    if ($vm.Generation -eq 1) { $maxMiB = 1048576 }
    if ($MemoryMiB -lt 32 -or $MemoryMiB -gt $maxMiB) {
        throw (New-HcpError -Category InvalidArgument -ErrorId 'MemoryOutOfRange' -Message "Generation $($vm.Generation) virtual machines have 32-$maxMiB MB of memory; $MemoryMiB MB was asked for.")
    }
    if (-not $off) {
        throw (New-HcpError -Category InvalidOperation -ErrorId 'MemoryNeedsOff' -Message "Virtual machine '$($vm.Name)' is $($vm.State); HCP changes its memory only while it is off.")
    }
}

$drive = $null
$vhd = $null
$setDisk = $false
if ($DiskGiB -gt 0) {
    $drive = @(Get-VMHardDiskDrive -VM $vm | Sort-Object -Property ControllerType, ControllerNumber, ControllerLocation) | Select-Object -First 1
    if (-not $drive -or -not $drive.Path) {
        throw (New-HcpError -Category InvalidArgument -ErrorId 'DiskNotFound' -Message "Virtual machine '$($vm.Name)' has no virtual hard disk to grow.")
    }
    $vhd = Get-VHD -Path $drive.Path -ComputerName $vm.ComputerName
    $size = [int64]$DiskGiB * 1073741824
    if ($size -lt $vhd.Size) {
        throw (New-HcpError -Category InvalidArgument -ErrorId 'DiskShrink' -Message "The virtual hard disk of '$($vm.Name)' is $([int64]($vhd.Size / 1073741824)) GB; HCP never shrinks a disk ($DiskGiB GB was asked for).")
    }
    $setDisk = ($size -ne $vhd.Size)
    if ($setDisk) {
        if (@(Get-VMSnapshot -VM $vm).Count -gt 0) {
            throw (New-HcpError -Category InvalidOperation -ErrorId 'DiskHasCheckpoints' -Message "Virtual machine '$($vm.Name)' has checkpoints; its virtual hard disk cannot be resized until they are removed.")
        }
        if ($drive.ControllerType.ToString() -eq 'IDE' -and -not $off) {
            throw (New-HcpError -Category InvalidOperation -ErrorId 'DiskOnIdeNeedsOff' -Message "The virtual hard disk of '$($vm.Name)' is on the IDE chain; Hyper-V resizes it only while the virtual machine is off.")
        }
    }
}

if ($setCpu) {
    Set-VMProcessor -VM $vm -Count $Vcpus
    $changed += 'Vcpus'
}
if ($setMemory) {
    if ($memory.DynamicMemoryEnabled) {
        $min = [Math]::Min([int64]$memory.Minimum, $bytes)
        $maxBytes = [Math]::Max([int64]$memory.Maximum, $bytes)
        Set-VMMemory -VM $vm -MinimumBytes $min -StartupBytes $bytes -MaximumBytes $maxBytes
    }
    else {
        Set-VMMemory -VM $vm -StartupBytes $bytes
    }
    $changed += 'MemoryMiB'
}
if ($setDisk) {
    Write-HcpProgress -Percent 50 -Message "growing the virtual hard disk to $DiskGiB GB"
    Resize-VHD -Path $drive.Path -SizeBytes ([int64]$DiskGiB * 1073741824) -ComputerName $vm.ComputerName
    $changed += 'DiskGiB'
}
$vm = Get-VM -Id $vm.Id -ComputerName $vm.ComputerName
[ordered]@{ Changed = @($changed); State = $vm.State.ToString(); Vm = (Get-HcpVmView -VM $vm) }
